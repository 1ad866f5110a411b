"""OpenAI Chat Completions (``POST {base_url}/chat/completions``), and every server that
speaks it: vLLM, llama.cpp's server, Ollama (``http://localhost:11434/v1``), LiteLLM
proxies. Streams with ``stream_options.include_usage`` so streamed calls are accounted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from .._http import HTTPTransport, KeySource, SecretsProvider, interrupted, stream_error
from ..errors import ContentFilteredError
from ..messages import ImagePart, Message, ModelRequest, ModelResponse, TextPart, ToolCall, Usage
from ..protocol import StreamEnd, StreamEvent
from ._assemble import Assembler, Clock, dumps, parse_arguments, response

OPENAI_BASE_URL = "https://api.openai.com/v1"
_FINISH = {"function_call": "tool_calls"}


class OpenAIChat:
    """A Chat Completions endpoint. With a ``base_url`` other than OpenAI's, no key is required
    (local servers take none); ``max_tokens_field`` is ``max_completion_tokens`` on OpenAI
    (its reasoning models refuse ``max_tokens``) and ``max_tokens`` elsewhere, unless given."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        secrets: SecretsProvider | None = None,
        name: str = "openai",
        organization: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_connections: int = 100,
        http2: bool | None = None,
        max_tokens_field: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        url = (base_url or OPENAI_BASE_URL).rstrip("/")
        official = url == OPENAI_BASE_URL
        self.max_tokens_field = max_tokens_field or (
            "max_completion_tokens" if official else "max_tokens"
        )
        extra = {
            **(headers or {}),
            **({"openai-organization": organization} if organization else {}),
        }
        self._http = HTTPTransport(
            name,
            url,
            KeySource(api_key_env, api_key, secrets),
            lambda key: {"authorization": f"Bearer {key}"},
            key_required=official,
            headers=extra,
            timeout=timeout,
            max_connections=max_connections,
            http2=http2,
            client=client,
        )

    def __repr__(self) -> str:
        return f"OpenAIChat(name={self.name!r}, base_url={self._http.base_url!r})"

    def body(self, request: ModelRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body sent for ``request`` (public so tests and tools can inspect it)."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [wire_message(m) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        if request.output is not None:
            spec = request.output
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": spec.name, "schema": spec.schema, "strict": spec.strict},
            }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body[self.max_tokens_field] = request.max_tokens
        if request.stop:
            body["stop"] = request.stop
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(request.params)
        return body

    async def complete(self, request: ModelRequest) -> ModelResponse:
        clock = Clock()
        data = await self._http.post_json("/chat/completions", self.body(request), request.model)
        choice = (data.get("choices") or [{}])[0]
        message = _assistant_message(choice.get("message") or {})
        finish = _finish(choice.get("finish_reason"), message)
        self._check_refusal(choice.get("message") or {}, finish, message, request.model)
        return response(
            self.name, request, message, model=data.get("model"), finish=finish,
            usage=chat_usage(data.get("usage")), ident=data.get("id", ""), clock=clock,
        )  # fmt: skip

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        acc = Assembler()
        body = self.body(request, stream=True)
        finish: str | None = None
        usage = Usage()
        refusal: list[str] = []  # a refusal streams as delta.refusal, never as content
        ident, model, done = "", request.model, False
        async for event in self._http.stream_sse(
            "/chat/completions", body, request.model, lambda: acc.text
        ):
            if done:  # after the end: read the body out, so the connection is reused
                continue
            if event.data == "[DONE]":
                done = True
                continue
            chunk = _decode_chunk(event.data, self.name, request.model, acc)
            ident, model = chunk.get("id") or ident, chunk.get("model") or model
            if chunk.get("usage"):
                usage = chat_usage(chunk["usage"])
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:  # n > 1: the answer is the first choice
                    continue
                wire = choice.get("delta") or {}
                if isinstance(wire.get("refusal"), str):
                    refusal.append(wire["refusal"])
                for delta in _deltas(acc, wire):
                    yield delta
                finish = choice.get("finish_reason") or finish
        if not done:
            raise interrupted(self.name, request.model, acc.text, "no [DONE] event")
        message = acc.message()
        reason = _finish(finish, message)
        self._check_refusal({"refusal": "".join(refusal)}, reason, message, request.model)
        end = response(
            self.name, request, message, model=model, finish=reason, usage=usage,
            ident=ident, clock=acc.clock, ttft=acc.clock.ttft,
        )  # fmt: skip
        yield StreamEnd(end)

    def _check_refusal(
        self, wire: dict[str, Any], finish: str, message: Message, model: str
    ) -> None:
        refusal = wire.get("refusal")
        if refusal or (finish == "content_filter" and not message.content):
            raise ContentFilteredError(
                f"{self.name} model {model!r} refused: {refusal or 'content filter'!r}; "
                "rephrase the prompt, or fall back to another provider",
                provider=self.name,
                model=model,
            )

    async def aclose(self) -> None:
        await self._http.aclose()


def wire_message(m: Message) -> dict[str, Any]:
    """One message in the Chat Completions shape."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.text}
    if m.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": m.text or None}
        if m.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
        return out
    out = {"role": m.role, "content": _content(m)}
    if m.name:
        out["name"] = m.name
    return out


def _content(m: Message) -> str | list[dict[str, Any]]:
    if all(isinstance(p, TextPart) for p in m.content):
        return m.text
    parts: list[dict[str, Any]] = []
    for p in m.content:
        if isinstance(p, TextPart):
            parts.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": p.as_url()}})
    return parts


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _assistant_message(wire: dict[str, Any]) -> Message:
    parts: list[TextPart | ImagePart | ToolCall] = []
    if wire.get("content"):
        parts.append(TextPart(wire["content"]))
    for call in wire.get("tool_calls") or ():
        fn = call.get("function") or {}
        parts.append(
            ToolCall(call.get("id", ""), fn.get("name", ""), parse_arguments(fn.get("arguments")))
        )
    return Message("assistant", list(parts))


def _deltas(acc: Assembler, delta: dict[str, Any]) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if reasoning and isinstance(reasoning, str):  # vLLM, llama.cpp, DeepSeek, OpenRouter
        out.append(acc.add_reasoning(reasoning))
    if delta.get("content"):
        out.append(acc.add_text(delta["content"]))
    for call in delta.get("tool_calls") or ():
        fn = call.get("function") or {}
        out.append(
            acc.add_tool(
                call.get("index", 0), call.get("id"), fn.get("name"), fn.get("arguments") or ""
            )
        )
    return out


def _decode_chunk(data: str, provider: str, model: str, acc: Assembler) -> dict[str, Any]:
    try:
        chunk = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise interrupted(
            provider, model, acc.text, f"an unreadable event {data[:200]!r}"
        ) from None
    if isinstance(chunk, dict) and "error" in chunk:  # OpenAI, vLLM: an error mid-stream
        raise stream_error(provider, model, data, acc.text if acc.started else None)
    return chunk if isinstance(chunk, dict) else {}


def _finish(reason: str | None, message: Message) -> str:
    if reason is None:
        return "tool_calls" if message.tool_calls else "stop"
    return _FINISH.get(reason, reason)


def chat_usage(wire: dict[str, Any] | None) -> Usage:
    """Chat Completions usage, with cached prompt tokens and reasoning tokens."""
    if not wire:
        return Usage()
    prompt = wire.get("prompt_tokens_details") or {}
    completion = wire.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=wire.get("prompt_tokens") or 0,
        output_tokens=wire.get("completion_tokens") or 0,
        cached_tokens=prompt.get("cached_tokens") or 0,
        reasoning_tokens=completion.get("reasoning_tokens") or 0,
    )

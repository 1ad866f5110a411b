"""GenAI semantic-convention attributes on span records: tool and model calls, errors, usage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from ...events import ErrorInfo
from ..conventions import AttrValue, Usage, json_text
from .record import SpanEvent, SpanRecord


def name_effect(span: SpanRecord, kind: str, short: str, thread: str | None) -> None:
    attrs = span.attributes
    attrs["mainspring.effect.kind"] = kind
    if kind == "tool":
        span.name, span.client = f"execute_tool {short}", True
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = short
        attrs["gen_ai.tool.type"] = "function"
        attrs["gen_ai.tool.call.id"] = str(attrs["mainspring.effect.key"])
    elif kind == "model":
        model = str(attrs.get("gen_ai.request.model", short))
        span.name, span.client = f"chat {model}", True
        attrs["gen_ai.operation.name"] = "chat"
        attrs.setdefault("gen_ai.request.model", short)
        if thread is not None:
            attrs["gen_ai.conversation.id"] = thread


def set_error(span: SpanRecord, error: ErrorInfo | None, ts_ns: int) -> None:
    kind, message = ("Error", "") if error is None else (error.type, error.message)
    span.status, span.status_message = "error", f"{kind}: {message}"
    span.attributes["error.type"] = kind
    attrs: dict[str, AttrValue] = {"exception.type": kind, "exception.message": message}
    if error is not None and error.traceback:
        attrs["exception.stacktrace"] = error.traceback
    span.add_event(SpanEvent("exception", ts_ns, attrs))


def set_usage(span: SpanRecord, usage: Usage) -> None:
    attrs = span.attributes
    attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
    attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
    if usage.model:
        attrs["gen_ai.response.model"] = usage.model
        attrs.setdefault("gen_ai.request.model", usage.model)
    if usage.provider:
        attrs["gen_ai.provider.name"] = usage.provider
    if usage.cost_usd is not None:
        attrs["mainspring.cost_usd"] = usage.cost_usd
    if usage.cached_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
    if usage.reasoning_tokens:
        attrs["mainspring.usage.reasoning_tokens"] = usage.reasoning_tokens
    if usage.ttft is not None:
        attrs["mainspring.time_to_first_token_s"] = usage.ttft


# -- a model's reply as GenAI output messages ---------------------------------------------------
#
# ``gen_ai.output.messages`` (semantic conventions, output messages JSON schema): one message
# per choice, ``{"role", "parts": [{"type": "text", "content"} | {"type": "tool_call", "id",
# "name", "arguments"}], "finish_reason"}``. A model effect returns whatever its provider or
# gateway returned; the common shapes are read, anything else becomes one text part.

_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "tool_use": "tool_call",
}
# What a model effect's result says besides the reply (see conventions.usage_of).
_BOOKKEEPING: Final = frozenset({"usage", "model", "provider", "cost_usd", "id"})

Message = dict[str, Any]


def _finish(reason: Any, parts: list[dict[str, Any]]) -> str:
    if isinstance(reason, str) and reason:
        return _FINISH.get(reason, reason)
    return "tool_call" if any(p["type"] == "tool_call" for p in parts) else "stop"


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):  # OpenAI sends the arguments as JSON text
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


def _tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "tool_call", "name": str(name or "")}
    if call_id is not None:
        part["id"] = str(call_id)
    if arguments is not None:
        part["arguments"] = arguments
    return part


def _parts(content: Any) -> list[dict[str, Any]]:
    """Parts of a message's content: a string, or a list of text / tool-use blocks."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                parts.append({"type": "text", "content": block})
            elif not isinstance(block, Mapping):
                continue
            elif block.get("type") == "tool_use":  # Anthropic
                parts.append(_tool_call(block.get("id"), block.get("name"), block.get("input")))
            elif block.get("type") == "tool_call":  # Mainspring's own message model
                parts.append(_tool_call(block.get("id"), block.get("name"), block.get("arguments")))
            elif block.get("type") == "function_call":  # OpenAI Responses
                args = _arguments(block.get("arguments"))
                parts.append(_tool_call(block.get("call_id"), block.get("name"), args))
            elif isinstance(block.get("text"), str):  # text, output_text
                parts.append({"type": "text", "content": block["text"]})
            elif block.get("type") == "message":  # OpenAI Responses: a message item
                parts.extend(_parts(block.get("content")))
    return parts


def _message(message: Mapping[str, Any], reason: Any) -> Message:
    parts = _parts(message.get("content"))
    for call in message.get("tool_calls") or ():  # OpenAI chat completions
        if isinstance(call, Mapping):
            function = call.get("function")
            fn: Mapping[str, Any] = function if isinstance(function, Mapping) else call
            args = _arguments(fn.get("arguments"))
            parts.append(_tool_call(call.get("id"), fn.get("name"), args))
    role = message.get("role")
    return {
        "role": role if isinstance(role, str) else "assistant",
        "parts": parts,
        "finish_reason": _finish(reason, parts),
    }


def output_messages(result: Any) -> list[Message]:
    """A model effect's result as ``gen_ai.output.messages``: one message per choice.

    Read: OpenAI chat completions (``choices``), Anthropic messages and OpenAI
    Responses (``content`` / ``output`` blocks), a ``message`` dict, a ``text`` or
    ``content`` string, a bare string. Otherwise the result, less its usage
    bookkeeping, is one text part (as JSON), so the reply is never missing.
    """
    if isinstance(result, str):
        return [_message({"content": result}, None)]
    if not isinstance(result, Mapping):
        return [_message({"content": json_text(result)}, None)]
    reason = result.get("finish_reason", result.get("stop_reason"))
    choices = result.get("choices")
    if isinstance(choices, list) and choices:
        return [
            _message(c.get("message") or {}, c.get("finish_reason"))
            for c in choices
            if isinstance(c, Mapping)
        ]
    message = result.get("message")
    if isinstance(message, Mapping):
        return [_message(message, reason)]
    for key in ("content", "output"):
        if isinstance(result.get(key), list):
            return [_message({"role": result.get("role"), "content": result[key]}, reason)]
    for key in ("text", "content", "output_text", "output"):
        if isinstance(result.get(key), str):
            return [_message({"content": result[key]}, reason)]
    rest = {k: v for k, v in result.items() if k not in _BOOKKEEPING}
    return [_message({"content": json_text(rest)}, reason)]


def set_reply(span: SpanRecord, result: Any, messages: list[Message]) -> None:
    """What a model's reply says besides its content: response id, finish reasons."""
    attrs = span.attributes
    attrs["gen_ai.response.finish_reasons"] = tuple(str(m["finish_reason"]) for m in messages)
    if isinstance(result, Mapping) and isinstance(result.get("id"), str):
        attrs["gen_ai.response.id"] = result["id"]

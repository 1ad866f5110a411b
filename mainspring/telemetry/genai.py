"""GenAI semantic-convention attributes on span records: tool and model calls, errors, usage."""

from __future__ import annotations

from typing import Any

from .conventions import AttrValue, Usage
from .records import SpanEvent, SpanRecord


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


def set_error(span: SpanRecord, error: Any, ts_ns: int) -> None:
    err = error if isinstance(error, dict) else {}
    kind, message = str(err.get("type", "Error")), str(err.get("message", ""))
    span.status, span.status_message = "error", f"{kind}: {message}"
    span.attributes["error.type"] = kind
    attrs: dict[str, AttrValue] = {"exception.type": kind, "exception.message": message}
    if err.get("traceback"):
        attrs["exception.stacktrace"] = str(err["traceback"])
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

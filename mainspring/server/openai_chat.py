"""OpenAI's chat completions shapes for an agent served as a model: the request, the
``chat.completion`` answer and its ``chat.completion.chunk`` pieces, the usage, and
errors in OpenAI's own shape (``{"error": {"message", "type", "param", "code"}}``) so
that OpenAI's SDKs raise their usual exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.outcome import PendingInterrupt
from ..errors import MainspringError
from .errors import _CODES, ApiError, message_of, status_of
from .schemas import JsonObject


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """``POST /v1/openai/chat/completions``: OpenAI's fields this endpoint reads (others,
    such as ``temperature``, are accepted and left to the agent's own settings)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="the agent's name (GET /v1/openai/models)")
    messages: list[JsonObject] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int | None = None


# -- errors --------------------------------------------------------------------------------

_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def openai_error(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    kind = _TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    # OpenAI's SDKs retry a 409 or a 5xx: not a failed run (it would run the agent again)
    # nor a busy thread; a rate limit or an unavailable store, yes.
    retry = "true" if status in (429, 503) else "false"
    return JSONResponse(body, status, headers={"x-should-retry": retry})


class OpenAIRoute(APIRoute):
    """A route whose errors (its dependencies' too: auth, validation) answer in OpenAI's
    shape instead of the API's own."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                param = exc.details.get("param")
                return openai_error(exc.status, exc.code, exc.message, param)
            except RequestValidationError as exc:
                first = (exc.errors() or [{}])[0]
                at = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
                message = f"invalid request: {at or 'body'}: {first.get('msg', 'invalid')}"
                return openai_error(400, "invalid_request", message, at)
            except StarletteHTTPException as exc:
                code = _CODES.get(exc.status_code, "error")
                return openai_error(exc.status_code, code, str(exc.detail))
            except MainspringError as exc:
                mapped = status_of(exc)
                if mapped is None:
                    raise
                return openai_error(mapped[0], mapped[1], message_of(exc))

        return route


# -- answers -------------------------------------------------------------------------------


def usage_json(totals: Mapping[tuple[str, str], Mapping[str, int]]) -> dict[str, Any]:
    """The run's model usage (summed over its calls) as OpenAI's ``usage``."""
    prompt = sum(u["input"] for u in totals.values())
    completion = sum(u["output"] for u in totals.values())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(u["cached"] for u in totals.values())},
        "completion_tokens_details": {
            "reasoning_tokens": sum(u["reasoning"] for u in totals.values())
        },
    }


def waiting_text(run_id: str, interrupts: list[PendingInterrupt]) -> str:
    """What a parked run answers: what it waits for, and how to answer it."""
    lines = [f"Run {run_id} is waiting for a person before it can answer."]
    for i in interrupts:
        ask = _mapping(_mapping(i.payload).get("approve"))
        why = str(ask.get("reason") or "an answer is needed")
        lines.append(
            f"- {why} (interrupt {i.id}): approve with POST /v1/runs/{run_id}/interrupts/"
            f"{i.id}/approve, or reject or edit it; the thread goes on once it is answered."
        )
    return "\n".join(lines)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"

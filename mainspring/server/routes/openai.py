"""Routes: an agent as an OpenAI-compatible model (docs/server-agui-openai.md).

``GET /v1/openai/models`` lists the served agents; ``POST /v1/openai/chat/completions``
runs one (``model`` = its name) on the request's messages and answers as OpenAI does:
``chat.completion`` JSON, or with ``stream`` its ``chat.completion.chunk`` events (the
agent's tokens as they come) ending with ``data: [DONE]``. ``X-Mainspring-Thread: T``
makes the request a turn of thread ``T`` (the server keeps the conversation: only the
messages after the client's last assistant message are new); without it the whole list
is the input of a run of its own. Errors come in OpenAI's shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...agents.agent import Agent
from ...agents.state import final_text
from ...engine.outcome import RunOutcome
from ...events import EffectFinished, ModelDelta
from ...status import RunStatus
from ..agent_turns import (
    Turn,
    add_usage,
    open_turn,
    served_agent,
    served_agents,
    usage_of,
    view_of,
)
from ..auth import Caller, require
from ..catalog import UnknownGraphError
from ..context import ServerState, server_state
from ..errors import ApiError
from ..ids import checked_id
from ..keys.protocol import Scope
from ..openai_chat import DONE, ChatRequest, OpenAIRoute, sse, usage_json, waiting_text

log = logging.getLogger("mainspring.server")
router = APIRouter(
    prefix="/v1/openai",
    tags=["openai"],
    route_class=OpenAIRoute,
    responses={
        401: {"description": "no API key, or an unknown one (OpenAI's error shape)"},
        403: {"description": "the key lacks the run scope"},
        404: {"description": "no agent of that name (code model_not_found)"},
    },
)

THREAD_HEADER = "X-Mainspring-Thread"
Effect = tuple[int, int, int]  # a model call: (step, task, effect)
Runner = Annotated[Caller, Depends(require(Scope.RUN))]
Reader = Annotated[Caller, Depends(require(Scope.READ))]  # listing models, as every GET


def _model(agent: Agent, state: ServerState) -> dict[str, Any]:
    created = int(state.started_at or time.time())
    return {"id": agent.name, "object": "model", "created": created, "owned_by": "mainspring"}


def _agent(state: ServerState, name: str) -> Agent:
    try:
        return served_agent(state, name)
    except UnknownGraphError:
        served = ", ".join(a.name for a in served_agents(state)) or "none"
        raise ApiError(
            404,
            "model_not_found",
            f"the model {name!r} does not exist: a model is a served agent; served: {served}",
            param="model",
        ) from None


@router.get("/models", summary="The served agents, as models")
async def list_models(request: Request, caller: Reader) -> dict[str, Any]:
    state = server_state(request)
    return {"object": "list", "data": [_model(a, state) for a in served_agents(state)]}


@router.get("/models/{model}", summary="One served agent, as a model")
async def get_model(model: str, request: Request, caller: Reader) -> dict[str, Any]:
    state = server_state(request)
    return _model(_agent(state, model), state)


@router.post(
    "/chat/completions",
    summary="Chat with an agent as with an OpenAI model",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "chat.completion or chunks"},
        400: {"description": "an invalid request (OpenAI's error shape)"},
        409: {"description": "the thread's last run is still going or waits for an answer"},
        500: {"description": "the agent's run failed (code run_failed)"},
    },
    response_model=None,
)
async def chat_completions(
    body: ChatRequest,
    request: Request,
    caller: Runner,
    thread: Annotated[str | None, Header(alias=THREAD_HEADER)] = None,
) -> JSONResponse | StreamingResponse:
    agent = _agent(server_state(request), body.model)
    thread = checked_id(thread, THREAD_HEADER, status=400) if thread else None  # "": none
    if body.n not in (None, 1):
        raise ApiError(400, "unsupported", "n: an agent gives one answer; drop n", param="n")
    metadata = {"openai": {"user": body.user}} if body.user else None
    state = server_state(request)
    turn = await open_turn(
        agent, caller.api, state, body.messages, thread=thread, metadata=metadata
    )
    handle = turn.handle
    headers = {"X-Mainspring-Run-Id": handle.run_id}
    if thread is not None:
        headers[THREAD_HEADER] = thread
    head = {
        "id": f"chatcmpl-{handle.run_id}",
        "created": int(time.time()),
        "model": agent.name,
        "system_fingerprint": agent.graph.fingerprint,
    }
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            _chunks(turn, head, usage),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    await turn.events.aclose()
    outcome = await handle.wait()
    totals = usage_of(await view_of(caller.api).events(handle.run_id))
    text = _answer(outcome)
    return JSONResponse(
        {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage_json(totals),
            "mainspring": _about(outcome, thread),
        },
        headers=headers,
    )


def _answer(outcome: RunOutcome) -> str:
    """The agent's answer, or what a parked run waits for; a failed run is an error."""
    if outcome.status is RunStatus.INTERRUPTED:
        return waiting_text(outcome.run_id, list(outcome.interrupts))
    if outcome.status is RunStatus.FAILED:
        error = outcome.error or {}
        raise ApiError(
            500,
            "run_failed",
            f"the agent's run {outcome.run_id} failed: {error.get('type', 'Error')}: "
            f"{error.get('message', '')} (GET /v1/runs/{outcome.run_id} has its journal)",
        )
    if outcome.status is RunStatus.CANCELLED:
        raise ApiError(409, "run_cancelled", f"the agent's run {outcome.run_id} was cancelled")
    state = outcome.state if isinstance(outcome.state, Mapping) else {}
    return final_text(state.get("messages") or ())


def _about(outcome: RunOutcome, thread: str | None) -> dict[str, Any]:
    """Mainspring's own facts about the answer (an extra field OpenAI clients ignore)."""
    return {
        "run_id": outcome.run_id,
        "status": outcome.status.value,
        "thread": thread,
        "interrupts": [{"interrupt_id": i.id, "node": i.node} for i in outcome.interrupts],
    }


async def _chunks(turn: Turn, head: dict[str, Any], with_usage: bool) -> AsyncIterator[str]:
    """The run as ``chat.completion.chunk`` events: every token the agent's model says."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    said: set[Effect] = set()  # model calls whose tokens were sent
    last: list[Effect | None] = [None]  # the call that spoke last

    def say(key: Effect | None, text: str) -> str:
        # Each model turn's words are a paragraph of their own ("Let me look.", the answer).
        gap = "\n\n" if last[0] is not None and last[0] != key else ""
        last[0] = key
        return chunk({"content": gap + text})

    totals: dict[tuple[str, str], dict[str, int]] = {}
    try:
        event = turn.first
        while event is not None:
            data = event.data
            if isinstance(data, ModelDelta) and data.text:
                said.add(key := (data.step, data.task, data.effect))
                yield say(key, data.text)
            elif (
                isinstance(data, EffectFinished)
                and data.name.startswith("model:")
                and data.error is None
            ):
                add_usage(totals, data)
                key = (data.step, data.task, data.effect)
                if key not in said and (text := _result_text(data.result)):  # tokens missed
                    yield say(key, text)
            event = await anext(turn.events, None)
        outcome = await turn.handle.wait()
        if outcome.status is RunStatus.INTERRUPTED:
            yield say(None, waiting_text(outcome.run_id, list(outcome.interrupts)))
        elif outcome.status is not RunStatus.FINISHED:
            _answer(outcome)  # raises the run's error
    except ApiError as exc:
        yield sse({"error": {"message": exc.message, "type": "server_error", "param": None,
                             "code": exc.code}})  # fmt: skip
        return
    except Exception as exc:  # the store failed mid-stream: said in OpenAI's way, not hung up
        log.error("chat stream of run %s failed", turn.handle.run_id, exc_info=exc)
        yield sse({"error": {"message": f"the stream of run {turn.handle.run_id} failed",
                             "type": "server_error", "param": None, "code": "stream_failed"}})  # fmt: skip
        return
    finally:
        await turn.events.aclose()
    yield chunk({}, "stop")
    if with_usage:
        yield sse({**head, "object": "chat.completion.chunk", "choices": [],
                   "usage": usage_json(totals)})  # fmt: skip
    yield DONE


def _result_text(result: Any) -> str:
    message = result.get("message") if isinstance(result, Mapping) else None
    if not isinstance(message, Mapping):
        return ""
    return "".join(
        str(p.get("text", ""))
        for p in message.get("content") or ()
        if isinstance(p, Mapping) and p.get("type") == "text"
    )

"""Routes: the AG-UI protocol, ``POST /v1/agui/{name}`` (docs/server-agui-openai.md).

A ``RunAgentInput`` in, AG-UI events out as Server-Sent Events. The AG-UI thread is the
Mainspring thread; the AG-UI run ``R`` starts the run ``agui-R`` (the same request again
streams that run again: nothing runs twice). An input with ``resume`` entries answers
the interrupts of the thread's parked run and streams it on from where it stopped.
Problems found before the stream opens (no such agent, a busy thread, nothing to
resume) are HTTP errors; a run that fails ends its stream with ``RUN_ERROR``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from ag_ui.core import PROTOCOL_VERSION, RunAgentInput, RunErrorEvent, RunStartedEvent
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from ...agents.agent import Agent
from ...agents.running import prepare
from ...errors import RunNotFoundError
from ..agent_turns import Turn, follow, open_turn, parked_run, served_agent, view_of
from ..agui.inputs import agui_ids, conversation, preface, resume_values
from ..agui.translate import Translator
from ..auth import Caller, require
from ..context import ServerState, server_state
from ..errors import ApiError
from ..keys.protocol import Scope
from ..multitask import queues_of
from ..schemas import refuse_deep_json

log = logging.getLogger("mainspring.server")
router = APIRouter(tags=["agui"])
Runner = Annotated[Caller, Depends(require(Scope.RUN))]


@router.post(
    "/v1/agui/{name}",
    summary="Run an agent for an AG-UI client",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "AG-UI events"},
        400: {"description": "the body is not JSON"},
        401: {"description": "no API key, or an unknown one"},
        403: {"description": "the key lacks the run scope"},
        404: {"description": "no agent of that name"},
        409: {"description": "the thread is busy, nothing to resume, or the runId is taken"},
    },
)
async def run_agent(
    name: str,
    body: RunAgentInput,
    request: Request,
    caller: Runner,
) -> StreamingResponse:
    """Start (or resume) the agent ``name`` on the input's thread; stream AG-UI events."""
    refuse_deep_json(body, "body")
    agent = served_agent(server_state(request), name)
    turn = await _begin(agent, body, caller, server_state(request))
    encoder = EventEncoder(accept=request.headers.get("accept") or "")
    return StreamingResponse(
        _stream(turn, body, encoder),
        media_type=encoder.get_content_type(),
        headers={"Cache-Control": "no-cache", "X-Mainspring-Run-Id": turn.handle.run_id},
    )


async def _begin(agent: Agent, body: RunAgentInput, caller: Caller, state: ServerState) -> Turn:
    """The run to stream, started or resumed in the thread's critical section (a look at
    the thread and a start are one step: ``multitask.py``)."""
    thread, run_id = agui_ids(body)
    view = view_of(caller.api)
    async with queues_of(state).locked(view.tenant, thread):
        values = resume_values(body)
        if values is not None:
            prepare(agent, view)
            parked = await parked_run(agent, caller.api, thread)
            seq = (await view.get_run(parked)).last_seq
            handle = await view.resume(
                parked, values=values, graph=agent.graph, actor=caller.principal.key_id
            )
            return await follow(handle, after=seq)
        try:
            record = await view.get_run(run_id)
        except RunNotFoundError:
            return await open_turn(
                agent,
                caller.api,
                state,
                conversation(body),
                thread=thread,
                run_id=run_id,
                metadata={"agui": {"thread_id": thread, "run_id": body.run_id}},
                preface=preface(body),
                held=True,
            )
        if record.graph != agent.graph.name or record.thread != thread:
            raise ApiError(
                409,
                "run_exists",
                f"runId {body.run_id!r} was used for another agent or thread; give each run "
                "its own runId",
            )
        prepare(agent, view)
        return await follow(view.handle(run_id))  # a retry: the run once more, from its start


async def _stream(turn: Turn, body: RunAgentInput, encoder: EventEncoder) -> AsyncIterator[str]:
    translator = Translator(body.thread_id, body.run_id, turn.handle.run_id)
    yield encoder.encode(
        RunStartedEvent(
            thread_id=body.thread_id, run_id=body.run_id, protocol_version=PROTOCOL_VERSION
        )
    )
    try:
        if turn.first is not None:
            for out in translator.feed(turn.first):
                yield encoder.encode(out)
            async for event in turn.events:
                for out in translator.feed(event):
                    yield encoder.encode(out)
        outcome = await turn.handle.wait()
    except Exception as exc:  # the store failed mid-stream: the client is told, not hung up on
        log.error("AG-UI stream of run %s failed", turn.handle.run_id, exc_info=exc)
        yield encoder.encode(
            RunErrorEvent(
                message=f"the stream of run {turn.handle.run_id!r} failed; follow it at "
                f"GET /v1/runs/{turn.handle.run_id}/stream",
                code="stream_failed",
            )
        )
        return
    finally:
        await turn.events.aclose()
    for out in translator.close(outcome):
        yield encoder.encode(out)

"""An agent's turn as the chat-shaped endpoints (AG-UI, OpenAI-compatible) start it.

Both take a whole conversation from the client while a Mainspring thread keeps its own:
on a thread the server already holds, only the client's new turn (the messages after
its last assistant message) is sent; on a new thread (or none) the client's whole list
is. Messages come in OpenAI's shape (``role``, ``content`` as a string or text parts,
``tool_calls``, ``tool_call_id``) and become the agent state's message dicts.

``open_turn`` returns the run's handle with its event stream already subscribed: a
model call streams its tokens only to subscribers present when it starts, so the stream
is opened before anything awaits (the run's task has not run yet), never later.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..agents.agent import Agent
from ..agents.errors import AgentError
from ..agents.running import prepare, scoped, thread_messages
from ..engine.handle import RunHandle
from ..engine.queueing import QueueOptions
from ..engine.tenancy import TenantRuntime
from ..events import EffectFinished, Event
from ..status import RunStatus
from .auth import Api
from .catalog import UnknownGraphError
from .context import ServerState
from .errors import ApiError
from .multitask import check_free, queues_of, reserved
from .queued import queue_options

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool"}  # fmt: skip


def served_agent(state: ServerState, name: str) -> Agent:
    """The agent served as ``name``: its own name (``forecaster``) or its graph's
    (``agent:forecaster``); 404 if none, 422 for a plain graph."""
    catalog = state.catalog
    try:
        entry = catalog.get(name)
    except UnknownGraphError:
        for entry in catalog:
            if entry.kind == "agent" and getattr(entry.agent, "name", None) == name:
                break
        else:
            raise
    if entry.kind != "agent" or entry.agent is None:
        raise ApiError(
            422,
            "not_an_agent",
            f"{name!r} is a graph, not an agent: only a mainspring.Agent can be driven by "
            "a chat; start a graph with POST /v1/runs",
        )
    agent: Agent = entry.agent
    return agent


def served_agents(state: ServerState) -> list[Agent]:
    """Every agent the server serves, in the catalog's order."""
    return [e.agent for e in state.catalog if e.kind == "agent" and e.agent is not None]


def state_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages as the agent state's message dicts (what the journal keeps)."""
    return [_state_message(m, i) for i, m in enumerate(messages)]


def _state_message(m: Mapping[str, Any], at: int) -> dict[str, Any]:
    role = _ROLES.get(str(m.get("role")))
    if role is None:
        raise ApiError(
            422,
            "invalid_request",
            f"messages[{at}]: role {m.get('role')!r} is not one of "
            "system, developer, user, assistant, tool",
        )
    parts: list[dict[str, Any]] = []
    content = m.get("content")
    if isinstance(content, str):
        if content:
            parts.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ApiError(
                    422,
                    "invalid_request",
                    f"messages[{at}]: a content part of type {kind!r} is not supported; "
                    "send text parts ({'type': 'text', 'text': ...}) or a string",
                )
            parts.append({"type": "text", "text": str(part.get("text", ""))})
    elif content is not None:
        raise ApiError(422, "invalid_request", f"messages[{at}]: content must be a string or parts")
    calls = m.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ApiError(422, "invalid_request", f"messages[{at}]: tool_calls must be a list")
    for call in calls:
        parts.append(_tool_call(call, at))
    out: dict[str, Any] = {"role": role, "content": parts}
    if role == "tool":
        if not m.get("tool_call_id"):
            raise ApiError(
                422, "invalid_request", f"messages[{at}]: a tool message needs tool_call_id"
            )
        out["tool_call_id"] = str(m["tool_call_id"])
    if m.get("name"):
        out["name"] = str(m["name"])
    return out


def _tool_call(call: Any, at: int) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not function.get("name"):
        raise ApiError(
            422, "invalid_request", f"messages[{at}]: a tool call needs function.name and arguments"
        )
    raw = function.get("arguments") or "{}"
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError):
        raise ApiError(
            422, "invalid_request", f"messages[{at}]: tool call arguments are not a JSON object"
        ) from None
    if not isinstance(arguments, dict):
        raise ApiError(
            422, "invalid_request", f"messages[{at}]: tool call arguments are not a JSON object"
        )
    return {"type": "tool_call", "id": str(call.get("id", "")), "name": str(function["name"]),
            "arguments": arguments}  # fmt: skip


def new_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages after the last assistant message: what the client adds to a thread the
    server already holds (the earlier ones are in the thread's last run)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return messages[i + 1 :]
    return messages


def view_of(api: Api) -> TenantRuntime:
    """The tenant view runs are started and threads looked up through (an operator's
    requests act as the default tenant, as ``agent.start`` on a Runtime does)."""
    return scoped(api, None)


@dataclass(slots=True)
class Turn:
    """A started (or resumed) run and its subscribed event stream."""

    handle: RunHandle
    events: AsyncGenerator[Event, None]
    first: Event | None  # the stream's first event, read to subscribe (None: it ended)


async def follow(handle: RunHandle, after: int = 0) -> Turn:
    """Subscribe to ``handle``'s events (tokens too) at once; see the module's docstring."""
    events = handle.events(after=after, deltas=True)
    try:
        first: Event | None = await events.__anext__()
    except StopAsyncIteration:
        first = None
    return Turn(handle, events, first)


async def open_turn(
    agent: Agent,
    api: Api,
    state: ServerState,
    messages: list[dict[str, Any]],
    *,
    thread: str | None,
    run_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    preface: Sequence[dict[str, Any]] = (),
    held: bool = False,
) -> Turn:
    """Start the agent on the client's conversation (OpenAI-shaped messages: its new turn,
    on a thread the server holds), ``preface`` (state messages: e.g. the client's context
    as a system message) before it; its events followed from the start (tokens included).
    On a thread, the look at it and the start are one step (the thread's critical section,
    as every start on a thread: ``multitask.py``); ``held``: the caller is in it already."""
    messages = state_messages(messages)
    view = view_of(api)
    prepare(agent, view)
    queues = queues_of(state)
    reserved(queues, run_id, view.tenant)
    queued = queue_options(state)  # queue mode: the server's queue's workers drive it
    if thread is None or held:
        if thread is not None:
            await check_free(queues, view, thread, _hint(thread))
        handle = await _start_turn(agent, view, messages, thread, run_id, metadata, preface, queued)
        return await follow(handle)  # nothing awaited since the start: see the docstring
    async with queues.locked(view.tenant, thread):
        await check_free(queues, view, thread, _hint(thread))
        handle = await _start_turn(agent, view, messages, thread, run_id, metadata, preface, queued)
        return await follow(handle)  # before leaving the section, which may await


async def _start_turn(
    agent: Agent,
    view: TenantRuntime,
    messages: list[dict[str, Any]],
    thread: str | None,
    run_id: str | None,
    metadata: dict[str, Any] | None,
    preface: Sequence[dict[str, Any]],
    queued: QueueOptions,
) -> RunHandle:
    if thread is not None:
        try:
            held = await thread_messages(agent, view, thread)
        except AgentError as exc:  # the thread's last run is still going or parked
            raise _busy(exc, thread) from None
        if held:
            messages = new_turn(messages)
    if not messages:
        raise ApiError(422, "invalid_request", "messages: give at least one new message")
    try:
        return await agent.start(
            view,
            [*preface, *messages],
            thread=thread,
            run_id=run_id,
            metadata=metadata,
            **queued,
        )
    except AgentError as exc:  # the thread got busy meanwhile (another process's start)
        raise _busy(exc, thread) from None


def _hint(thread: str) -> str:
    return (
        f"GET /v1/interrupts?thread={thread} names what it waits for; approve or reject it, "
        "or POST /v1/runs/{run_id}/cancel"
    )


def _busy(exc: AgentError, thread: str | None) -> ApiError:
    hint = (
        f" (over HTTP: GET /v1/interrupts?thread={thread} names what it waits for; approve "
        "or reject it, or POST /v1/runs/{run_id}/cancel)"
    )
    return ApiError(409, "thread_busy", f"{exc}{hint}", thread=thread)


async def parked_run(agent: Agent, api: Api, thread: str) -> str:
    """The id of the thread's run of ``agent`` parked on an interrupt (409 if none)."""
    found = await view_of(api).list_runs(
        thread=thread, graph=agent.graph.name, status=RunStatus.INTERRUPTED, limit=1
    )
    if not found:
        raise ApiError(
            409,
            "nothing_to_resume",
            f"thread {thread!r} has no run of agent {agent.name!r} waiting for an answer",
            thread=thread,
        )
    return found[0].run_id


def usage_of(events: Sequence[Event]) -> dict[tuple[str, str], dict[str, int]]:
    """Token counts of the model calls among ``events``, by (provider, model)."""
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for event in events:
        data = event.data
        if not isinstance(data, EffectFinished) or not data.name.startswith("model:"):
            continue
        add_usage(totals, data)
    return totals


def add_usage(totals: dict[tuple[str, str], dict[str, int]], data: EffectFinished) -> None:
    """Add one finished model call's usage (as its response recorded it) to ``totals``."""
    result = data.result if isinstance(data.result, Mapping) else {}
    usage = result.get("usage") or data.usage or {}
    if not isinstance(usage, Mapping):
        return
    key = (str(result.get("provider", "")), str(result.get("model", "") or usage.get("model", "")))
    into = totals.setdefault(key, {"input": 0, "output": 0, "cached": 0, "reasoning": 0})
    into["input"] += int(usage.get("input_tokens") or 0)
    into["output"] += int(usage.get("output_tokens") or 0)
    into["cached"] += int(usage.get("cached_tokens") or 0)
    into["reasoning"] += int(usage.get("reasoning_tokens") or 0)


__all__ = ["Turn", "follow", "open_turn", "served_agent", "usage_of"]

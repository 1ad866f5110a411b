"""Starting runs over HTTP: the tenant a start acts for, the graph or agent it names, the
run id that makes it idempotent, and the wait for where it stops.

``POST /v1/runs`` and ``POST /v1/threads/{thread}/runs`` both come here; what a start does
on a thread whose run is still going is ``multitask.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from ..agents.errors import AgentError
from ..engine.handle import RunHandle
from ..engine.tenancy import TenantRuntime
from ..errors import RunNotFoundError, StateError
from ..events import EffectFinished, Event, RunStarted
from ..graph.compiled import CompiledGraph
from ..store import RunRecord, tenant_of
from ..telemetry.conventions import usage_of
from .auth import Api, Caller
from .catalog import CatalogEntry
from .context import ServerState
from .errors import ApiError
from .queued import options_of
from .schemas import StartRun
from .views import outcome_json, run_json

#: What a bad input raises on its way into a run: the request's fault (422), not the server's.
BAD_INPUT = (StateError, TypeError, ValueError, msgspec.ValidationError)


def start_view(caller: Caller, state: ServerState, body: StartRun) -> TenantRuntime:
    """The tenant's view a start acts through: the key's tenant; an operator's key may name
    one (``tenant``, else the metadata's), and starts in the default tenant otherwise."""
    if caller.tenant is None:
        tenant = body.tenant if body.tenant is not None else tenant_of(body.metadata)
        return state.runtime.tenant(tenant)
    if body.tenant is not None and body.tenant != caller.tenant:
        raise ApiError(
            403,
            "tenant",
            f"this key acts for tenant {caller.tenant!r} and cannot start runs for "
            f"{body.tenant!r}; drop 'tenant' (only an operator's key may name one)",
        )
    api = caller.api
    assert isinstance(api, TenantRuntime)
    return api


def resolve(state: ServerState, body: StartRun) -> tuple[CatalogEntry, CompiledGraph]:
    entry = state.catalog.get(body.graph)
    graph = entry.version(body.version)
    if entry.kind == "agent" and graph is not entry.agent.graph:
        raise ApiError(
            422,
            "invalid_request",
            f"agent {entry.name!r} runs its current version only ({entry.agent.graph.fingerprint})",
        )
    return entry, graph


async def existing(view: TenantRuntime, body: StartRun) -> RunRecord | None:
    """The run a repeated request names (``run_id`` taken by this tenant), if any."""
    if body.run_id is None:
        return None
    try:
        return await view.get_run(body.run_id)
    except RunNotFoundError:
        return None


def check_repeat(record: RunRecord, body: StartRun) -> None:
    """A run id is one request's: another graph or thread is a conflict (409)."""
    if record.graph != body.graph or record.thread != body.thread:
        raise ApiError(
            409,
            "run_exists",
            f"run {record.run_id!r} exists with graph {record.graph!r} and thread "
            f"{record.thread!r}, not this request's; choose another run_id",
        )


async def begin(
    view: TenantRuntime,
    entry: CatalogEntry,
    graph: CompiledGraph,
    body: StartRun,
    input: Any,
    metadata: dict[str, Any] | None,
) -> RunHandle:
    """Start the run: an agent through ``agent.start`` (the thread's conversation goes on),
    a graph through the runtime. ``input`` may differ from the body's (see multitask).
    A body with a queue (``queued.placed``) leaves the run to that queue's workers."""
    queued = options_of(body)
    try:
        if entry.kind == "agent":
            handle: RunHandle = await entry.agent.start(
                view, input, thread=body.thread, run_id=body.run_id, metadata=metadata, **queued
            )
            return handle
        return await view.start(
            graph, input, run_id=body.run_id, thread=body.thread, metadata=metadata, **queued
        )
    except AgentError as exc:  # the thread got an open run between our look and the start
        raise ApiError(409, "thread_busy", str(exc)) from None
    except BAD_INPUT as exc:
        raise ApiError(
            422, "invalid_input", f"the input does not fit {body.graph!r}: {exc}"
        ) from None


async def answer(
    api: Api,
    state: ServerState,
    handle: RunHandle,
    wait: bool,
    timeout: float,
    version: str | None = None,
) -> dict[str, Any]:
    """The Run after a start or a resume: with ``wait``, once it stops moving (finished,
    failed, cancelled or parked) or ``timeout`` passes (then without its outcome).
    ``version``: the graph's fingerprint, when the caller knows it (else read)."""
    outcome = None
    if wait:
        with anyio.move_on_after(timeout):
            outcome = await handle.wait()
    record = await api.get_run(handle.run_id)
    body = run_json(record, version or await version_of(api, handle.run_id))
    body["outcome"] = outcome_json(outcome) if outcome is not None else None
    return body


async def version_of(api: Api, run_id: str) -> str | None:
    """The graph's fingerprint the run started with (its ``run_started`` event)."""
    first = await api.events(run_id, until=1)
    data = first[0].data if first else None
    return data.fingerprint or None if isinstance(data, RunStarted) else None


async def served_graph(state: ServerState, api: Api, record: RunRecord, to: str) -> CompiledGraph:
    """The graph (at the run's version) of a run, if this server serves it; else 409."""
    graph = state.catalog.find(record.graph, await version_of(api, record.run_id))
    if graph is None:
        raise ApiError(
            409,
            "graph_not_served",
            f"run {record.run_id!r} belongs to graph {record.graph!r}, which this server does "
            f"not serve; start the server with it (--graph MODULE:ATTR) to {to}",
        )
    return graph


async def detail(api: Api, state: ServerState, record: RunRecord) -> dict[str, Any]:
    """A run with its outcome (``GET /v1/runs/{id}``), if this server serves its graph, and
    its model calls' usage (one read of its journal)."""
    events = await api.events(record.run_id)
    first = events[0].data if events else None
    version = first.fingerprint or None if isinstance(first, RunStarted) else None
    body = run_json(record, version)
    body["usage"] = usage_json(events)
    graph = state.catalog.find(record.graph, version)
    body["outcome"] = (
        outcome_json(await api.outcome(record.run_id, graph)) if graph is not None else None
    )
    return body


def usage_json(events: list[Event]) -> dict[str, Any]:
    """The usage the run's effects reported (``effect_finished``: its ``usage``, else the
    model result's), summed."""
    calls = input_tokens = output_tokens = cached = reasoning = 0
    cost: float | None = None
    for event in events:
        data = event.data
        if not isinstance(data, EffectFinished):
            continue
        usage = usage_of({"usage": data.usage}) if data.usage else usage_of(data.result)
        if usage is None:
            continue
        calls += 1
        input_tokens += usage.input_tokens
        output_tokens += usage.output_tokens
        cached += usage.cached_tokens
        reasoning += usage.reasoning_tokens
        if usage.cost_usd is not None:
            cost = (cost or 0.0) + usage.cost_usd
    return {
        "model_calls": calls,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": cached,
        "reasoning_tokens": reasoning,
        "cost_usd": cost,
    }


@dataclass(frozen=True, slots=True)
class Started:
    """What a start answers: its status (201 new, 200 a repeat, 202 queued) and body."""

    status: int
    body: dict[str, Any]

"""Routes: runs (docs/server.md, "Endpoints"): start, list, read, the state at any sequence
number, the journal, the trace; cancel, resume, fork and replay.

Everything is read from the journal through the caller's view of the runtime (another
tenant's run is 404, as a missing one); nothing is kept beside it.
"""

from __future__ import annotations

import json as stdlib_json
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from ...engine.handle import RunHandle
from ...engine.tenancy import TenantRuntime
from ...errors import RunNotFoundError
from ...events import EventKind, to_jsonable
from ...store import RunStatus
from ...telemetry.conventions import Capture
from ...telemetry.reader import trace_events
from ...telemetry.spans.derive import derive_spans
from ...telemetry.waterfall import to_json as waterfall_json
from ..auth import Caller, require
from ..context import ServerState, server_state
from ..depth import clip
from ..errors import ApiError
from ..keys.protocol import Scope
from ..multitask import check_free, lifespan, queues_of, reserved, start_run
from ..paging import decode_cursor, encode_cursor, runs_after
from ..schemas import (
    AUTH,
    MAX_SEQ,
    MAX_TIME,
    CancelRequest,
    EventPage,
    ForkRequest,
    QueuedRun,
    ReplayReport,
    ResumeRequest,
    RunDetail,
    RunList,
    RunStatusName,
    StartRun,
    StateAt,
    Trace,
    errors,
)
from ..starting import answer, detail, served_graph
from ..views import interrupt_json, run_json

router = APIRouter(tags=["runs"], lifespan=lifespan)  # the queue of double texting

Reader = Annotated[Caller, Depends(require(Scope.READ))]
Runner = Annotated[Caller, Depends(require(Scope.RUN))]
Approver = Annotated[Caller, Depends(require(Scope.APPROVE))]
RunId = Annotated[str, "the run's id"]


def json(body: Any, status: int = 200) -> Response:
    """A JSON answer built without a per-field check (journal pages can be long). A body
    orjson cannot encode (a value stored nested deeper than its limit, written through the
    Python API) is answered with the deep parts clipped rather than failing."""
    try:
        content = orjson.dumps(body)
    except orjson.JSONEncodeError:  # too deep, or an int past 64 bits: the slow encoder
        content = stdlib_json.dumps(clip(body, _DEEPEST), ensure_ascii=False).encode()
    return Response(content, status, media_type="application/json")


#: How deep a whole answer may nest before its deep parts are clipped (orjson stops at 255).
_DEEPEST = 200


@router.post(
    "/v1/runs",
    status_code=201,
    response_model=RunDetail,
    summary="Start a run (or wait for its result); idempotent by run_id",
    responses={
        200: {"model": RunDetail, "description": "the same run again (same run_id)"},
        202: {"model": QueuedRun, "description": "queued behind the thread's open run"},
        **errors(*AUTH, 404, 409),
    },
)
async def start(body: StartRun, request: Request, caller: Runner) -> Response:
    started = await start_run(server_state(request), caller, body)
    return JSONResponse(started.body, started.status)


@router.get(
    "/v1/runs",
    response_model=RunList,
    summary="Runs matching every filter, newest first",
    responses=errors(*AUTH, 404),
)
async def list_runs(
    caller: Reader,
    status: Annotated[
        list[RunStatusName] | None, Query(description="repeat for any of several statuses")
    ] = None,
    graph: Annotated[str | None, Query(max_length=200)] = None,
    thread: Annotated[str | None, Query(max_length=200)] = None,
    tenant: Annotated[
        str | None, Query(max_length=200, description="operator keys: one tenant's runs")
    ] = None,
    created_after: Annotated[float | None, Query(ge=0, le=MAX_TIME)] = None,
    created_before: Annotated[float | None, Query(ge=0, le=MAX_TIME)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    cursor: Annotated[
        str | None,
        Query(
            max_length=400,
            description="a page's next_cursor: the runs after that page (offset: counted "
            "from there)",
        ),
    ] = None,
) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if tenant is not None:
        if caller.tenant is not None and tenant != caller.tenant:
            raise ApiError(403, "tenant", f"this key sees tenant {caller.tenant!r} only")
        if caller.tenant is None:
            filters["tenant"] = tenant
    listing = partial(
        caller.api.list_runs, status=status or None, graph=graph, thread=thread, **filters
    )
    if cursor is None:
        records = await listing(
            limit=limit + 1,
            offset=offset,
            created_after=created_after,
            created_before=created_before,
        )
    else:
        after = decode_cursor(cursor)
        records = await runs_after(
            listing, after, limit + 1, created_after, created_before, skip=offset
        )
    more = len(records) > limit
    page = records[:limit]
    return {
        "runs": [run_json(r) for r in page],
        "next_offset": offset + limit if more and cursor is None else None,
        "next_cursor": encode_cursor(page[-1]) if more else None,
    }


@router.get(
    "/v1/runs/{run_id}",
    response_model=RunDetail,
    summary="A run and where it stands",
    responses=errors(*AUTH, 404),
)
async def get_run(run_id: RunId, request: Request, caller: Reader) -> dict[str, Any]:
    record = await caller.api.get_run(run_id)
    return await detail(caller.api, server_state(request), record)


@router.get(
    "/v1/runs/{run_id}/state",
    response_model=StateAt,
    summary="The run's state as of a sequence number (default: now)",
    responses=errors(*AUTH, 404, 409),
)
async def state_at(
    run_id: RunId,
    request: Request,
    caller: Reader,
    at: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> dict[str, Any]:
    api = caller.api
    record = await api.get_run(run_id)
    graph = await served_graph(server_state(request), api, record, "read its state")
    view = await api.state(run_id, at=at, graph=graph)
    return {
        "run_id": view.run_id,
        "seq": view.seq,
        "step": view.step,
        "status": view.status.value,
        "state": to_jsonable(clip(view.values), what="the state"),
        "next": view.next,
        "interrupts": [interrupt_json(i) for i in view.interrupts],
    }


@router.get(
    "/v1/runs/{run_id}/events",
    response_model=EventPage,
    summary="The run's journal, a page of events after a sequence number",
    responses=errors(*AUTH, 404),
)
async def events(
    run_id: RunId,
    caller: Reader,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    kind: Annotated[
        list[EventKind] | None,
        Query(description="only these kinds (e.g. effect_decided: the policy's decisions)"),
    ] = None,
) -> Response:
    """Events ``after`` < seq <= ``after + limit``; with ``kind``, those of the page that are
    of these kinds (a page may then be empty with ``more`` true: go on from ``last_seq``)."""
    record = await caller.api.get_run(run_id)
    page = await caller.api.events(run_id, after=after, until=after + limit)
    last = page[-1].seq if page else min(after, record.last_seq)  # not a later `after`
    if kind:
        page = [e for e in page if e.kind in kind]
    return json(
        {"events": [e.to_json() for e in page], "last_seq": last, "more": last < record.last_seq}
    )


@router.get(
    "/v1/runs/{run_id}/trace",
    response_model=Trace,
    summary="The run's trace waterfall: spans derived from its journal (subgraph runs too)",
    responses=errors(*AUTH, 404),
)
async def trace(
    run_id: RunId,
    request: Request,
    caller: Reader,
    io: Annotated[bool, Query(description="include inputs, updates and results")] = False,
) -> Response:
    await caller.api.get_run(run_id)  # scoped: its subgraph runs are its tenant's too
    found = await trace_events(server_state(request).runtime.store, run_id)
    return json(waterfall_json(derive_spans(found, Capture(enabled=io))))


@router.post(
    "/v1/runs/{run_id}/cancel",
    response_model=RunDetail,
    summary="Cancel a run (a live one is stopped, a parked one ended)",
    responses=errors(*AUTH, 404, 409),
)
async def cancel(
    run_id: RunId, request: Request, caller: Runner, body: CancelRequest | None = None
) -> dict[str, Any]:
    reason = body.reason if body is not None else None
    actor = caller.principal.key_id + (f": {reason}" if reason else "")
    await caller.api.cancel(run_id, actor=actor)
    record = await caller.api.get_run(run_id)
    return await detail(caller.api, server_state(request), record)


@router.post(
    "/v1/runs/{run_id}/resume",
    response_model=RunDetail,
    summary="Resume a parked run with a value (or a run a dead process left)",
    responses=errors(*AUTH, 404, 409),
)
async def resume(
    run_id: RunId, request: Request, caller: Approver, body: ResumeRequest | None = None
) -> dict[str, Any]:
    body = body or ResumeRequest()
    state = server_state(request)
    if body.both_ways():
        await caller.api.get_run(run_id)  # another tenant's run: 404 first
        raise ApiError(
            422,
            "invalid_request",
            "invalid request: body: give `value` (with `interrupt_id` if several are "
            "pending) or `values` ({interrupt id: value}), not both",
            problems=[{"at": "body.values", "problem": "not with value or interrupt_id"}],
        )
    return await resume_with(
        state,
        caller,
        run_id,
        body.value,
        interrupt_id=body.interrupt_id,
        values=body.values,
        wait=body.wait,
        timeout=body.timeout,
    )


async def resume_with(
    state: ServerState,
    caller: Caller,
    run_id: str,
    value: Any,
    *,
    interrupt_id: str | None = None,
    values: dict[str, Any] | None = None,
    wait: bool = False,
    timeout: float = 60.0,
    note: str | None = None,
) -> dict[str, Any]:
    """Resume through the caller's view with the run's own graph (by its version); the
    journal's ``actor`` is the key's id, then ``: <note>`` (an approval's comment)."""
    api = caller.api
    record = await api.get_run(run_id)
    graph = await served_graph(state, api, record, "resume the run")
    named = [interrupt_id] if interrupt_id is not None else list(values or ())
    if named:  # as approve, reject and edit answer an interrupt that is not pending
        pending = [i.id for i in (await api.outcome(run_id, graph)).interrupts]
        for iid in named:
            if iid not in pending:
                raise ApiError(
                    404,
                    "interrupt_not_found",
                    f"run {run_id!r} has no pending interrupt {iid!r} "
                    f"(pending: {', '.join(pending) or 'none'})",
                )
    try:
        handle = await api.resume(
            run_id,
            value,
            interrupt_id=interrupt_id,
            values=values,
            graph=graph,
            actor=caller.principal.key_id + (f": {note}" if note else ""),
        )
    except (TypeError, ValueError) as exc:
        raise ApiError(422, "invalid_value", f"cannot resume with that value: {exc}") from None
    return await answer(api, state, handle, wait, timeout, graph.fingerprint)


@router.post(
    "/v1/runs/{run_id}/fork",
    status_code=201,
    response_model=RunDetail,
    summary="A new run whose journal is this run's up to a sequence number",
    responses=errors(*AUTH, 404, 409),
)
async def fork(
    run_id: RunId, request: Request, caller: Runner, body: ForkRequest | None = None
) -> dict[str, Any]:
    body = body or ForkRequest()
    api = caller.api
    state = server_state(request)
    record = await api.get_run(run_id)
    graph = await served_graph(state, api, record, "fork the run")

    async def fork_it() -> RunHandle:
        return await api.fork(
            run_id,
            body.at,
            new_run_id=body.new_run_id,
            graph=graph,
            thread=body.thread,
            effects=body.effects,
            actor=caller.principal.key_id,
        )

    # A fork is a start: on a thread (its own, or the source's), through the thread's
    # critical section, and only on a free thread (multitask.py, docs/server.md).
    queues = queues_of(state)
    reserved(queues, body.new_run_id, record.tenant)
    thread = body.thread if body.thread is not None else record.thread
    if thread is None:
        handle = await fork_it()
    else:
        view = state.runtime.tenant(record.tenant)
        async with queues.locked(record.tenant, thread):
            if body.new_run_id is None or await _missing(view, body.new_run_id):
                await check_free(queues, view, thread, _FORK_HINT)
            handle = await fork_it()
    return await answer(api, state, handle, False, 0, graph.fingerprint)


_FORK_HINT = (
    "a fork starts a run on it, and a thread has one open run at a time: fork onto another "
    "thread ('thread'), or end that run first"
)


async def _missing(view: TenantRuntime, run_id: str) -> bool:
    try:
        await view.get_run(run_id)
    except RunNotFoundError:
        return True
    return False  # a repeated fork: the runtime answers it (the same fork, or a conflict)


@router.post(
    "/v1/runs/{run_id}/replay",
    response_model=ReplayReport,
    summary="Re-run the run against its recorded effects; the first divergence",
    responses=errors(*AUTH, 404, 409),
)
async def replay(run_id: RunId, request: Request, caller: Runner) -> dict[str, Any]:
    api = caller.api
    record = await api.get_run(run_id)
    if record.status is RunStatus.RUNNING:  # its journal is still growing: nothing to compare
        raise ApiError(
            409,
            "run_state",
            f"run {run_id!r} is running; replay compares a stopped run (finished, failed, "
            "cancelled or parked): replay it once it stops",
        )
    graph = await served_graph(server_state(request), api, record, "replay the run")
    report = await api.replay(run_id, graph=graph)
    d = report.divergence
    return {
        "run_id": report.run_id,
        "ok": report.ok,
        "compared": report.compared,
        "divergence": None
        if d is None
        else {"seq": d.seq, "expected": d.expected, "actual": d.actual},
    }


__all__ = ["resume_with", "router"]

"""Routes: threads (a tenant's conversations: their runs) and new messages on them, with
double texting (``multitask.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from ..auth import Caller, require
from ..context import server_state
from ..errors import ApiError
from ..keys.protocol import Scope
from ..multitask import OPEN, queues_of, start_run
from ..schemas import (
    AUTH,
    NewMessage,
    QueuedRun,
    RunDetail,
    StartRun,
    ThreadDetail,
    ThreadList,
    errors,
)
from ..views import run_json

router = APIRouter(tags=["threads"])

Reader = Annotated[Caller, Depends(require(Scope.READ))]
Runner = Annotated[Caller, Depends(require(Scope.RUN))]
ThreadId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@~-]+$")]


@router.get(
    "/v1/threads",
    response_model=ThreadList,
    summary="Threads, most recently updated first",
    responses=errors(*AUTH),
)
async def list_threads(
    caller: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> dict[str, Any]:
    threads = await caller.api.list_threads(limit=limit)
    return {
        "threads": [
            {
                "thread": t.thread,
                "tenant": t.tenant,
                "runs": t.runs,
                "last_run_id": t.last_run_id,
                "last_status": t.last_status.value,
                "updated_at": t.updated_at,
            }
            for t in threads
        ]
    }


@router.get(
    "/v1/threads/{thread}",
    response_model=ThreadDetail,
    summary="A thread: its runs (newest first), its open run and the runs queued behind it",
    responses=errors(*AUTH, 404),
)
async def get_thread(
    thread: ThreadId,
    request: Request,
    caller: Reader,
    tenant: Annotated[
        str | None, Query(max_length=200, description="operator keys: the thread's tenant")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    if caller.tenant is not None and tenant not in (None, caller.tenant):
        raise ApiError(403, "tenant", f"this key sees tenant {caller.tenant!r} only")
    owner = caller.tenant if caller.tenant is not None else tenant or ""
    view = server_state(request).runtime.tenant(owner)
    runs = await view.list_runs(thread=thread, limit=limit)
    queues = queues_of(server_state(request))
    queued = [*queues.failed(owner, thread), *queues.queued(owner, thread)]
    if not runs and not queued:
        raise ApiError(404, "thread_not_found", f"no runs on thread {thread!r}")
    top = [r for r in runs if r.parent_run_id is None]
    open_run = next((r.run_id for r in top if r.status in OPEN), None)
    return {
        "thread": thread,
        "tenant": owner,
        "runs": [run_json(r) for r in runs],
        "open_run_id": open_run,
        "queued": [q.to_json() for q in queued],
    }


@router.post(
    "/v1/threads/{thread}/runs",
    status_code=201,
    response_model=RunDetail,
    summary="A new message on a thread: a run, with double texting by `multitask`",
    responses={
        200: {"model": RunDetail, "description": "the same run again (same run_id)"},
        202: {"model": QueuedRun, "description": "queued behind the thread's open run"},
        **errors(*AUTH, 404, 409),
    },
)
async def new_message(
    thread: ThreadId, body: NewMessage, request: Request, caller: Runner
) -> JSONResponse:
    started = await start_run(
        server_state(request), caller, StartRun(**body.model_dump(), thread=thread)
    )
    return JSONResponse(started.body, started.status)

"""Routes: interrupts pending across runs, and the answers to them: approve, reject, edit.

The answers are the toolbox's approval protocol (docs/tools.md): approve resumes the
interrupt with ``True``, reject with ``{"approve": False, "reason": ...}``, edit with
``{"args": {...}}`` (a tool call's approval then runs the edited call). Any interrupt
can be answered so; ``POST /v1/runs/{id}/resume`` gives any other value.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from ...status import RunStatus
from ..auth import Caller, require
from ..context import ServerState, server_state
from ..keys.protocol import Scope
from ..schemas import (
    AUTH,
    ApproveRequest,
    EditRequest,
    InterruptList,
    RejectRequest,
    RunDetail,
    errors,
)
from ..starting import version_of
from ..views import pending_json
from .runs import resume_with

router = APIRouter(tags=["interrupts"])

Reader = Annotated[Caller, Depends(require(Scope.READ))]
Approver = Annotated[Caller, Depends(require(Scope.APPROVE))]
InterruptId = Annotated[str, Path(min_length=1, max_length=200)]


@router.get(
    "/v1/interrupts",
    response_model=InterruptList,
    summary="Interrupts waiting for an answer, across runs, oldest first",
    responses=errors(*AUTH),
)
async def list_interrupts(
    request: Request,
    caller: Reader,
    graph: Annotated[str | None, Query(max_length=200)] = None,
    thread: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many parked runs")] = 100,
) -> dict[str, Any]:
    """The parked runs (the newest ``limit``), each run's pending interrupts. Runs of a
    graph this server does not serve are left out (it could not resume them)."""
    api, catalog = caller.api, server_state(request).catalog
    parked = await api.list_runs(
        status=RunStatus.INTERRUPTED, graph=graph, thread=thread, limit=limit
    )
    found: list[dict[str, Any]] = []
    for record in sorted(parked, key=lambda r: (r.updated_at, r.run_id)):
        served = catalog.find(record.graph, await version_of(api, record.run_id))
        if served is None:
            continue
        outcome = await api.outcome(record.run_id, served)
        found.extend(pending_json(record, i, record.updated_at) for i in outcome.interrupts)
    return {"interrupts": found}


async def answer_interrupt(
    state: ServerState,
    caller: Caller,
    run_id: str,
    interrupt_id: str,
    value: Any,
    wait: bool,
    timeout: float,
    note: str | None = None,
) -> dict[str, Any]:
    # resume_with answers 404 interrupt_not_found if the interrupt is not pending.
    return await resume_with(
        state,
        caller,
        run_id,
        value,
        interrupt_id=interrupt_id,
        wait=wait,
        timeout=timeout,
        note=note,
    )


@router.post(
    "/v1/runs/{run_id}/interrupts/{interrupt_id}/approve",
    response_model=RunDetail,
    summary="Approve: resume the interrupt with true",
    responses=errors(*AUTH, 404, 409),
)
async def approve(
    run_id: str,
    interrupt_id: InterruptId,
    request: Request,
    caller: Approver,
    body: ApproveRequest | None = None,
) -> dict[str, Any]:
    body = body or ApproveRequest()
    return await answer_interrupt(
        server_state(request),
        caller,
        run_id,
        interrupt_id,
        True,
        body.wait,
        body.timeout,
        note=body.comment,
    )


@router.post(
    "/v1/runs/{run_id}/interrupts/{interrupt_id}/reject",
    response_model=RunDetail,
    summary='Reject: resume the interrupt with {"approve": false, "reason": ...}',
    responses=errors(*AUTH, 404, 409),
)
async def reject(
    run_id: str,
    interrupt_id: InterruptId,
    request: Request,
    caller: Approver,
    body: RejectRequest | None = None,
) -> dict[str, Any]:
    body = body or RejectRequest()
    value = {"approve": False, "reason": body.reason or "rejected"}
    return await answer_interrupt(
        server_state(request), caller, run_id, interrupt_id, value, body.wait, body.timeout
    )


@router.post(
    "/v1/runs/{run_id}/interrupts/{interrupt_id}/edit",
    response_model=RunDetail,
    summary='Edit: resume the interrupt with {"args": {...}} (a tool call runs with them)',
    responses=errors(*AUTH, 404, 409),
)
async def edit(
    run_id: str,
    interrupt_id: InterruptId,
    body: EditRequest,
    request: Request,
    caller: Approver,
) -> dict[str, Any]:
    return await answer_interrupt(
        server_state(request),
        caller,
        run_id,
        interrupt_id,
        {"args": body.args},
        body.wait,
        body.timeout,
    )

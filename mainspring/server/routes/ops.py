"""Routes: health and readiness (no key needed), metrics (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..context import server_state

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the runtime is open and its store answers")
async def readyz(request: Request) -> JSONResponse:
    state = server_state(request)
    if not state.ready:
        return JSONResponse({"status": "starting"}, 503)
    try:
        await state.runtime.list_runs(limit=1)
    except Exception as exc:  # the store is down: not ready, and say why
        return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, 503)
    return JSONResponse({"status": "ready"})

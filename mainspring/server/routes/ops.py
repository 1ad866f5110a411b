"""Routes: health and readiness (no key needed), who am I (read), metrics (admin)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ..auth import Caller, require
from ..context import server_state
from ..keys.protocol import Scope
from ..metrics import metrics_text
from ..schemas import AUTH, Health, Me, errors

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=Health,
    response_model_exclude_none=True,
    summary="Liveness: the process answers",
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: the runtime is open and its store answers",
    responses={503: {"model": Health, "description": "starting, or the store is down"}},
)
async def readyz(request: Request) -> JSONResponse:
    state = server_state(request)
    if not state.ready:
        return JSONResponse({"status": "starting"}, 503)
    try:
        with anyio.fail_after(state.config.ready_timeout):
            await state.runtime.list_runs(limit=1)
    except TimeoutError:  # the runtime retries a store that is down: not ready meanwhile
        reason = f"the store did not answer within {state.config.ready_timeout:g} s"
        return JSONResponse({"status": "unavailable", "reason": reason}, 503)
    except Exception as exc:  # the store is down: not ready, and say why
        return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, 503)
    return JSONResponse({"status": "ready"})


# HEAD too (a balancer's probe may send it); the OpenAPI document lists the GETs.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)


@router.get(
    "/v1/me",
    response_model=Me,
    summary="The calling key: its tenant and scopes",
    responses=errors(*AUTH),
)
async def me(caller: Annotated[Caller, Depends(require(Scope.READ))]) -> dict[str, object]:
    p = caller.principal
    return {"key_id": p.key_id, "tenant": p.tenant, "scopes": sorted(s.value for s in p.scopes)}


@router.get(
    "/metrics",
    summary="Prometheus metrics, computed from the journals of recent runs",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **errors(*AUTH),
    },
)
async def metrics(
    request: Request, caller: Annotated[Caller, Depends(require(Scope.ADMIN))]
) -> Response:
    body, content_type = await metrics_text(server_state(request), caller.tenant)
    return Response(body, media_type=content_type)

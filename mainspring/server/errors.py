"""Errors as HTTP answers: one JSON shape, a status that says whose fault, never a traceback.

Every error body is ``{"error": {"code": "...", "message": "..."}}`` (``details`` added
for invalid requests: which field, and what is wrong). Mainspring's own errors map to
their status here; anything unexpected is logged with its traceback and answered 500
with a request id to find it in the log.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.routing import Match

from ..errors import (
    ConflictError,
    EffectDeniedError,
    LeaseLostError,
    MainspringError,
    RunExistsError,
    RunNotFoundError,
    RunStateError,
    SerializationError,
    StoreUnavailableError,
    TenantError,
)
from .catalog import UnknownGraphError

log = logging.getLogger("mainspring.server")

#: Mainspring errors -> (status, code), most specific first.
_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (RunNotFoundError, 404, "run_not_found"),
    (UnknownGraphError, 404, "graph_not_found"),
    (RunExistsError, 409, "run_exists"),
    (RunStateError, 409, "run_state"),
    (TenantError, 403, "tenant"),
    (SerializationError, 422, "invalid_value"),
    (EffectDeniedError, 403, "denied"),
    (StoreUnavailableError, 503, "store_unavailable"),
    # Two requests answered or moved the same run at once: the journal took one of them.
    (ConflictError, 409, "run_state"),
    (LeaseLostError, 409, "run_state"),
)

#: What the client is told instead of the error's own text (which may name the store's
#: host, port and database: the log keeps that).
_SAID: tuple[tuple[type[BaseException], str], ...] = (
    (StoreUnavailableError, "the store is unavailable; retry"),
    (
        ConflictError,
        "the run was answered or moved meanwhile by another request; read it again",
    ),
    (
        LeaseLostError,
        "the run was answered or moved meanwhile by another request; read it again",
    ),
)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media",
          422: "invalid_request", 429: "rate_limited", 503: "unavailable"}  # fmt: skip


class ApiError(Exception):
    """An error a route raises with its own status and code."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def status_of(exc: BaseException) -> tuple[int, str] | None:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, code
    return None


def message_of(exc: BaseException) -> str:
    """What a client is told of a Mainspring error (logged in full if it is withheld)."""
    if isinstance(exc, RunNotFoundError):  # not "in this store": the client sees a server
        return f"no run with id {exc.run_id!r} on this server"
    for kind, said in _SAID:
        if isinstance(exc, kind):
            log.warning("answered %r for: %s", said, exc)
            return said
    return str(exc)


def request_id(conn: HTTPConnection) -> str:
    """The request's id, as its ``X-Request-ID`` header and the server's log show it (given
    by the security middleware; made here for a request that did not pass it)."""
    found: str | None = getattr(conn.state, "request_id", None)
    if found is None:
        found = conn.state.request_id = secrets.token_hex(8)
    return found


def internal_error(conn: HTTPConnection, exc: BaseException) -> JSONResponse:
    """A 500 for an unexpected ``exc``: logged with its traceback, answered with the request
    id only (never the traceback, nor the exception's text, which may hold data)."""
    rid = request_id(conn)
    method = conn.scope.get("method", "WEBSOCKET")
    log.error("request %s %s failed (id %s)", method, conn.url.path, rid, exc_info=exc)
    message = f"internal error; the server log has it as {rid}"
    return JSONResponse(error_body("internal", message, request_id=rid), 500)


def error_response(conn: HTTPConnection, exc: Exception) -> JSONResponse:
    """The answer to an error raised outside the routes (the middleware's own calls)."""
    if isinstance(exc, ApiError):
        return JSONResponse(error_body(exc.code, exc.message, **exc.details), exc.status)
    if isinstance(exc, StarletteHTTPException):
        code = _CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)
    mapped = status_of(exc) if isinstance(exc, MainspringError) else None
    if mapped is None:
        return internal_error(conn, exc)
    return JSONResponse(error_body(mapped[1], message_of(exc)), mapped[0])


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at the request's path (for a 405's ``Allow``)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, **exc.details), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the first route's methods only
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(app, request))}
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"at": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"at": "", "problem": "invalid"}
        message = f"invalid request: {first['at']}: {first['problem']}"
        return JSONResponse(error_body("invalid_request", message, problems=problems), 422)

    @app.exception_handler(MainspringError)
    async def _mainspring(request: Request, exc: MainspringError) -> JSONResponse:
        mapped = status_of(exc)
        if mapped is None:
            return await _unexpected(request, exc)
        status, code = mapped
        return JSONResponse(error_body(code, message_of(exc)), status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request, exc)

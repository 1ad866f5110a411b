"""Who a request is: its API key checked, its scope required, its tenant's view of the runtime.

Every route declares the scope it needs with ``Depends(require(Scope.X))`` and acts
through ``caller.api``: the runtime as the key's tenant sees it (``TenantRuntime``), so
another tenant's run is not found (404), never shown. An operator's key (tenant ``"*"``)
acts through the runtime itself, every tenant's runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from ..engine.runtime import Runtime
from ..engine.tenancy import TenantRuntime
from .context import server_state
from .keys.protocol import ALL_TENANTS, Principal, Scope

#: The principal of every request when the server runs with ``auth=False``.
LOCAL = Principal("local", ALL_TENANTS, frozenset({Scope.ADMIN}))

Api = Runtime | TenantRuntime


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    api: Api

    @property
    def tenant(self) -> str | None:
        """The caller's tenant; None for an operator (every tenant)."""
        t = self.principal.tenant
        return None if t == ALL_TENANTS else t


def bearer_key(conn: HTTPConnection) -> str | None:
    """The API key of a request: ``Authorization: Bearer KEY``, else ``X-API-Key``, else (for
    browsers' EventSource and WebSocket, which cannot set headers) the ``api_key`` query."""
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return conn.headers.get("x-api-key") or conn.query_params.get("api_key") or None


async def authenticate(conn: HTTPConnection) -> Principal:
    state = server_state(conn)
    cached: Principal | None = getattr(conn.state, "principal", None)
    if cached is not None:
        return cached
    if not state.config.auth:
        principal = LOCAL
    else:
        key = bearer_key(conn)
        if key is None or state.keys is None:
            raise HTTPException(
                401,
                "an API key is required: send 'Authorization: Bearer <key>' "
                "(create one with 'mainspring keys create --tenant T --scopes read,run')",
                headers={"WWW-Authenticate": "Bearer"},
            )
        found = await state.keys.verify(key)
        if found is None:
            raise HTTPException(
                401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
            )
        principal = found
    conn.state.principal = principal
    return principal


def require(scope: Scope) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: the caller, if its key has ``scope`` (else 403)."""

    async def dependency(request: Request) -> Caller:
        return await caller_with(request, scope)

    return dependency


async def caller_with(conn: HTTPConnection, scope: Scope) -> Caller:
    """The caller of ``conn`` if its key has ``scope``: for routes (and WebSockets) that
    check by hand."""
    principal = await authenticate(conn)
    if not principal.allows(scope):
        raise HTTPException(403, f"this API key lacks the {scope.value!r} scope")
    runtime = server_state(conn).runtime
    api: Api = runtime if principal.tenant == ALL_TENANTS else runtime.tenant(principal.tenant)
    return Caller(principal, api)

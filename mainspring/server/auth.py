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


@dataclass(frozen=True, slots=True)
class _Checked:
    """A request's key, checked once (by the security middleware, else the first route
    dependency): whether one was sent, and whose it is (None: unknown, revoked, malformed);
    the key itself, for streams that check it again (the query's is gone from the request
    once checked)."""

    presented: bool
    principal: Principal | None
    key: str | None = None


async def identify(conn: HTTPConnection) -> Principal | None:
    """The principal of the request's key, checked once per request; None if it sent no
    key or one that is not valid. Raises nothing for a missing key (``authenticate`` does):
    the rate limiter asks this of every request, routes that need no key included."""
    checked: _Checked | None = getattr(conn.state, "mainspring_auth", None)
    if checked is None:
        state = server_state(conn)
        if not state.config.auth:
            checked = _Checked(False, LOCAL)
        else:
            key = bearer_key(conn)
            found = None
            if key is not None and state.keys is not None:
                found = await state.keys.verify(key)
            checked = _Checked(key is not None, found, key)
        conn.state.mainspring_auth = checked
    return checked.principal


def checked_key(conn: HTTPConnection) -> str | None:
    """The key ``identify`` checked for ``conn`` (None: not checked yet, none sent, or
    ``auth=False``)."""
    checked: _Checked | None = getattr(conn.state, "mainspring_auth", None)
    return None if checked is None else checked.key


async def authenticate(conn: HTTPConnection) -> Principal:
    """The request's principal; 401 without a valid key."""
    principal = await identify(conn)
    if principal is not None:
        return principal
    checked: _Checked = conn.state.mainspring_auth
    if not checked.presented:
        raise HTTPException(
            401,
            "an API key is required: send 'Authorization: Bearer <key>' "
            "(create one with 'mainspring keys create --tenant T --scopes read,run')",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # One answer for unknown, revoked and malformed keys: which one it was is not told.
    raise HTTPException(
        401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
    )


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

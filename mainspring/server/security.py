"""The server's guards, as ASGI middleware ``create_app`` installs (docs/server-security.md).

From the outside in:

* :class:`Shield`: every HTTP response gets the security headers (a Content-Security-Policy
  that allows the console's own files only, no inline script; ``nosniff``; no framing; no
  referrer; ``Cache-Control: no-store`` on the API) and an ``X-Request-ID``; an exception
  no handler took becomes the one error JSON with that id, never a traceback.
* CORS (Starlette's ``CORSMiddleware``), only when ``ServerConfig.cors_origins`` names
  origins: off by default, so browsers refuse other sites' scripts reading the API.
* :class:`Guard`: the request's key is checked once (``auth.identify``), then the rate
  limit is taken (per key; per client address without a valid key; none with
  ``auth=False``, a loopback-only server of one user), then the body is read
  up to ``max_body_bytes`` (``413`` past it, chunked bodies included) before any route sees
  it. An ``api_key`` query parameter is removed from the request once checked, so it
  reaches neither the routes nor the access log.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from typing import Final
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import mainspring.server.errors as errors

from .auth import identify
from .config import ServerConfig
from .ratelimit import RateLimiter, retry_after

#: The console's policy (and every other response's): its own files only, no inline
#: script or style, no plug-ins, not framed by any page.
CONSOLE_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: The OpenAPI browser (/docs) is FastAPI's Swagger UI page: its script and style from
#: jsDelivr, and one inline script, allowed by its hash (computed from the page served).
_DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net {hashes}; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS: Final = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
)
_PROBES: Final = frozenset({"/healthz", "/readyz"})
_UNLIMITED: Final = _PROBES | {"/", "/console"}
_API_PATHS: Final = ("/v1/", "/metrics", "/healthz", "/readyz", "/openapi.json")
_PAGE_DEFAULTS: Final = tuple(
    (name.encode(), value.encode())
    for name, value in (*_HEADERS, ("content-security-policy", CONSOLE_CSP))
)
_API_DEFAULTS: Final = (*_PAGE_DEFAULTS, (b"cache-control", b"no-store"))
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


log = logging.getLogger("mainspring.server")
_ORIGIN: Final = re.compile(
    r"^https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$"
)
ANY_ORIGIN_WARNING: Final = (
    "CORS origin '*': pages of any web site may call this API from a browser (each still "
    "needs an API key, which no other site has); name your app's origins instead if you can"
)


def check_origins(origins: tuple[str, ...]) -> None:
    """ValueError naming an entry of ``cors_origins`` that is not an origin
    (``scheme://host[:port]``). ``*`` (any origin) is allowed, with a warning in the log:
    keys travel in headers, never cookies, so a page of another site has none to send."""
    for origin in origins:
        if origin == "*":
            log.warning(ANY_ORIGIN_WARNING)
        elif not _ORIGIN.match(origin):
            raise ValueError(
                f"CORS origin {origin!r} is not an origin: give scheme://host[:port], e.g. "
                "https://app.example.com (no path, no trailing slash), or '*' for any"
            )


def install(app: FastAPI, config: ServerConfig, limiter: RateLimiter | None = None) -> None:
    """Add the guards to ``app`` (the last added runs first)."""
    check_origins(config.cors_origins)
    app.add_middleware(Guard, config=config, limiter=limiter)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID"],
            expose_headers=["Retry-After", "X-Request-ID"],
            allow_credentials=False,  # keys travel in headers, never in cookies
        )
    app.add_middleware(Shield, docs_path=app.docs_url)


def is_api(path: str) -> bool:
    return path.startswith(_API_PATHS) or path == "/v1"


class Shield:
    """Security headers and a request id on every response; no traceback ever."""

    def __init__(self, app: ASGIApp, docs_path: str | None = None) -> None:
        self.app = app
        self.docs_path = docs_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # what request.state reads
        request_id = state.setdefault("request_id", secrets.token_hex(8))
        path: str = scope["path"]
        defaults = _API_DEFAULTS if is_api(path) else _PAGE_DEFAULTS
        # The page is read whole to hash its inline script.
        secured = _Secured(send, defaults, request_id, hold=path == self.docs_path)
        try:
            await self.app(scope, receive, secured)
        except Exception as exc:
            if secured.started:
                raise  # the answer is on its way: the server closes the connection
            secured.held = None
            response = errors.error_response(HTTPConnection(scope), exc)
            await response(scope, receive, secured)


class _Secured:
    """:class:`Shield`'s ``send``: the headers added to the answer's start. An object of
    slots, not a closure: it lives as long as the request does (a stream's, for hours)."""

    __slots__ = ("defaults", "held", "request_id", "send", "started")

    def __init__(
        self, send: Send, defaults: tuple[tuple[bytes, bytes], ...], request_id: str, hold: bool
    ) -> None:
        self.send, self.defaults, self.request_id = send, defaults, request_id
        self.held: list[Message] | None = [] if hold else None
        self.started = False

    async def __call__(self, message: Message) -> None:
        held = self.held
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            headers += [(n, v) for n, v in self.defaults if n not in present]
            if b"x-request-id" not in present:
                headers.append((b"x-request-id", self.request_id.encode()))
            if held is not None:  # set from the page, when it is whole
                headers = [(n, v) for n, v in headers if n != b"content-security-policy"]
            message = {**message, "headers": headers}
        if held is not None:
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                for out in _with_docs_policy(held):
                    await self.send(out)
            return
        await self.send(message)


def _with_docs_policy(held: list[Message]) -> list[Message]:
    start, *bodies = held
    page = b"".join(m.get("body", b"") for m in bodies)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    MutableHeaders(scope=start).setdefault(
        "content-security-policy", _DOCS_CSP.format(hashes=hashes or "")
    )
    return [start, {"type": "http.response.body", "body": page, "more_body": False}]


class Guard:
    """The request's key, its rate limit and its body size, before any route runs."""

    def __init__(
        self,
        app: ASGIApp,
        config: ServerConfig,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self.limiter = limiter or RateLimiter(config.rate, config.burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        principal = await identify(conn)
        _drop_query_key(scope)
        client = scope.get("client")
        by_key = principal is not None and self.config.auth
        caller = (
            f"key:{principal.key_id}"
            if principal is not None and by_key
            else f"address:{client[0] if client else 'unknown'}"
        )
        # Without keys (--no-auth: loopback only) every client is the one local user. Health
        # and readiness are never limited: a balancer's probes share an address with clients;
        # nor are the console's own files (fetched before any key: a page must load).
        path = scope["path"]
        limited = self.config.auth and not (path in _UNLIMITED or path.startswith("/console/"))
        wait = await self.limiter.acquire(caller) if limited else 0.0
        if scope["type"] == "websocket":
            if wait:  # as the stream routes refuse: accepted, then closed 4000 + the status
                if (await receive())["type"] == "websocket.connect":
                    await send({"type": "websocket.accept"})
                    reason = f"rate limited: retry in {retry_after(wait)} s"
                    await send({"type": "websocket.close", "code": 4429, "reason": reason})
                return
            await self.app(scope, receive, send)
            return
        if wait:
            message = (
                f"too many requests for this {'API key' if by_key else 'client address'} "
                f"(at most {self.config.rate:g} a second, bursts of {self.config.burst}); "
                f"retry in {retry_after(wait)} s"
            )
            headers = {"Retry-After": retry_after(wait)}
            await _reply(scope, receive, send, 429, "rate_limited", message, headers)
            return
        length = conn.headers.get("content-length")
        del conn  # nothing of the checks is kept while the app answers (a stream: for hours)
        body = await self._read_body(scope, receive, send, length)
        if body is not None:
            await self.app(scope, _Replay(body, receive), send)

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, length: str | None
    ) -> bytes | None:
        """The request's body, or None when it was answered (too large, invalid) or the
        client left."""
        limit = self.config.max_body_bytes
        if length is not None and not length.strip().isdigit():
            invalid = f"invalid Content-Length {length[:40]!r}; send the body's size in bytes"
            await _reply(scope, receive, send, 400, "bad_request", invalid)
            return None
        too_large = (
            f"the request body is larger than this server accepts ({limit} bytes, "
            "ServerConfig.max_body_bytes); send a smaller body"
        )
        if length is not None and int(length) > limit:
            await _reply(scope, receive, send, 413, "too_large", too_large)
            return None
        # Read whole (the API takes JSON, not streams) and counted: a chunked body sends
        # no Content-Length, and is cut off here as soon as it passes the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left before sending its body: nobody to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(scope, receive, send, 413, "too_large", too_large)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _Replay:
    """A ``receive`` that gives the body read already, then what the client sends next
    (its disconnect, which streaming responses wait for). Slots, not a closure: it lives
    as long as the request does."""

    __slots__ = ("body", "receive")

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Message:
        body = self.body
        if body is not None:
            self.body = None  # given once; not kept
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()


async def _reply(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    response = JSONResponse(errors.error_body(code, message), status, headers=headers)
    await response(scope, receive, send)


def _drop_query_key(scope: Scope) -> None:
    """Remove ``api_key`` from the query string, in the scope the server logs from."""
    query: bytes = scope.get("query_string", b"")
    if b"api_key" not in query:
        return
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k != "api_key"]
    scope["query_string"] = urlencode(kept).encode("latin-1")


__all__ = ["CONSOLE_CSP", "Guard", "Shield", "install", "is_api"]

"""The web console: a journal viewer with buttons, served by the API's own process.

Plain ES modules and one stylesheet under ``static/`` (no build step, no Node.js, nothing
from a CDN): ``GET /`` is the page, ``/console/...`` its files. The page talks only to the
public ``/v1`` API, as any client would, with the key the user typed (kept in the tab's
session storage). Its Content-Security-Policy allows this origin only: no inline script or
style, no ``eval``, so text from a run (which may hold anything a model wrote) can never run
as code; the scripts put it in the page with ``textContent`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from ..context import server_state

STATIC: Final = Path(__file__).parent / "static"

#: The security headers (the Content-Security-Policy of this origin only, ``nosniff``, no
#: framing) are the server's own, on every response (``security.Shield``); the console adds
#: only this: revalidate every time (the ETag makes that cheap), so a new release's files are
#: seen at once, never mixed with cached modules of the last one.
_HEADERS: Final = {"Cache-Control": "no-cache"}


class _ConsoleFiles(StaticFiles):
    """The console's files, revalidated each time, and JavaScript as JavaScript whatever the
    host's mimetypes table says (browsers refuse modules served as anything else)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if not (path.endswith(".js") and k.lower() == b"content-type")
                ]
                if path.endswith(".js"):
                    headers.append((b"content-type", b"text/javascript; charset=utf-8"))
                headers.extend((k.lower().encode(), v.encode()) for k, v in _HEADERS.items())
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def mount(app: FastAPI) -> None:
    """Serve the console: the page at ``/`` (and ``/console``), its files under ``/console/``."""

    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=_HEADERS)

    async def auth_mode(request: Request) -> dict[str, bool]:
        # Whether the page must ask for a key before its first /v1 call (none of which it
        # makes without one when auth is on: no 401 on a fresh load). Public: it says only
        # what any 401 would.
        return {"auth": server_state(request).config.auth}

    for path in ("/", "/console"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    # Before the mount of the files, which would otherwise answer this path with a 404.
    app.add_api_route("/console/auth.json", auth_mode, methods=["GET"], include_in_schema=False)
    app.mount("/console", _ConsoleFiles(directory=STATIC), name="console")

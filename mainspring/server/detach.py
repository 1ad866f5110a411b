"""Long responses run after the middleware has returned: what an idle stream keeps alive.

An SSE stream answers for hours, mostly idle. Awaited inside the app's middleware (Starlette's
error and exception layers, FastAPI's, the guards of ``security.py``, the router) every
layer's coroutine frame, its ``send`` closure and its locals stay alive as long as the
stream does: most of an idle stream's memory (benchmarks/server_streams.py, W15-idle).

So a route checks the request and sends its response's start through the whole stack
(the guards check the key, the tenant and the rate limit; the security headers are added
to the start), then hands the rest of the response, a ``rest(receive, send)`` callable, to
:func:`detach`. Every layer returns; :class:`MainspringApp`, the app's outermost layer,
runs ``rest`` with the server's own ``receive`` and ``send``.

Valid only because no middleware of the app does anything to a response after its start
(they add headers to the start, or answer errors before it): body messages sent past them
are what they would have passed on. A response whose start went out is never turned into
an error answer either: an exception in ``rest`` is logged as the error layer would (with
the request id) and goes to the server, which closes the connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from .errors import internal_error

#: The scope's key of the list a route puts its detached rest in (shared by the scope's
#: copies: a layer that copies the scope still hands the same list down).
DETACH: Final = "mainspring.detach"

Rest = Callable[[Receive, Send], Awaitable[object]]


def detach(scope: Scope, rest: Rest) -> bool:
    """Have the app run ``rest(receive, send)`` once every middleware has returned; call it
    after the response's start went through them, then return. False where the app does
    not run detached parts (another app mounts the route): then await ``rest`` yourself."""
    slot: list[Rest] | None = scope.get(DETACH)
    if slot is None or slot:
        return False
    slot.append(rest)
    return True


class MainspringApp(FastAPI):
    """FastAPI, running what a route :func:`detach`-ed after the middleware stack returned."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        given = tuple(scope)
        slot: list[Rest] = []
        scope[DETACH] = slot
        await super().__call__(scope, receive, send)
        if not slot:
            return
        rest = slot.pop()
        # What the layers put in the scope (the router, the route, FastAPI's exited exit
        # stack...) is theirs: not kept for the stream's life. The server's keys stay
        # (its access log reads them), and the request's state (its id, for the log).
        for key in [key for key in scope if key not in given and key != "state"]:
            del scope[key]
        del given
        try:
            await rest(receive, send)
        except Exception as exc:
            internal_error(HTTPConnection(scope), exc)  # logged with the request id
            raise  # the response started: the server closes the connection


__all__ = ["DETACH", "MainspringApp", "Rest", "detach"]
